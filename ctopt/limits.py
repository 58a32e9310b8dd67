"""Bounds on symbolic work, so that an analysis of a too-large design fails fast with a clear
error instead of hanging a notebook.

Two kinds of bound: a size limit (:func:`check_size`: states and polynomial degree) checked
before any work, and a wall-clock limit (:func:`time_limit`). Every analysis entry point
(``transfer_function``, ``transfer_functions``, ``state_space``, ``closed_loop``,
``stability_conditions``, ``lyapunov``, ``filter_validity``, ``worst_case_rate``, ``tune``,
``iqc_rate``, ``check_lyapunov``) takes a keyword ``timeout=`` in seconds (``None``: no limit of
its own) and raises :class:`~ctopt.errors.AnalysisTimeout` (an ``UnsupportedError``) when it
runs out. Limits nest: inside a user's own limit (an outer ``time_limit``, or any
``signal.setitimer(ITIMER_REAL)`` alarm) the inner deadline is the earlier of the two; the outer
alarm fires at its own deadline, with its own handler, whether it expires inside or after the
inner block. The wall-clock limit uses ``SIGALRM`` and so applies in the main thread on POSIX;
elsewhere only the size limits apply.

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
import functools
import inspect
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator

from .errors import HyperparameterError, UnsupportedError

__all__ = ["MAX_STATES", "MAX_DEGREE", "AnalysisTimeout", "check_count", "check_size",
           "check_timeout",
           "time_limit", "timed"]

#: Largest state count a symbolic analysis accepts.
MAX_STATES = 6
#: Largest polynomial degree a symbolic analysis accepts.
MAX_DEGREE = 6
#: Largest accepted ``timeout`` (one day): beyond it ``setitimer`` loses meaning.
MAX_TIMEOUT = 86_400.0


class AnalysisTimeout(UnsupportedError):
    """A symbolic analysis ran past its ``timeout``."""


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


def check_timeout(timeout: object, what: str = "timeout") -> float | None:
    """``timeout`` as seconds in ``(0, 86400]``, or ``None``; anything else (a bool, a string,
    zero, negative, nan, inf) raises :class:`HyperparameterError` naming it.

    Example:
        >>> check_timeout(2), check_timeout(None)
        (2.0, None)
        >>> check_timeout(float("nan"))
        Traceback (most recent call last):
        ...
        ctopt.errors.HyperparameterError: timeout = nan is outside the allowed range (0, 86400] seconds (or None: no limit)
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise HyperparameterError(f"{what} must be a number of seconds or None, not "
                                  f"{type(timeout).__name__}")
    try:
        seconds = float(timeout)
    except OverflowError:
        seconds = math.inf
    if not 0 < seconds <= MAX_TIMEOUT:
        raise HyperparameterError(f"{what} = {timeout!r} is outside the allowed range "
                                  f"(0, {MAX_TIMEOUT:g}] seconds (or None: no limit)")
    return seconds


def check_count(value: object, name: str, high: int, low: int = 1) -> int:
    """``value`` as a whole number in ``[low, high]`` (a count of steps, elements, epochs...);
    anything else (a bool, a float with a fraction, nan, inf, out of range) raises
    :class:`HyperparameterError` naming ``name``.

    Example:
        >>> check_count(20, "steps", 1000)
        20
        >>> check_count(float("inf"), "steps", 1000)
        Traceback (most recent call last):
        ...
        ctopt.errors.HyperparameterError: steps = inf is not a whole number in [1, 1000]
    """
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or not low <= value <= high:
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
            shown = f"<an integer of {value.bit_length()} bits>"
        else:
            shown = repr(value) if isinstance(value, (int, float)) else f"a {type(value).__name__}"
        raise HyperparameterError(f"{name} = {shown} is not a whole number in [{low}, {high}]")
    return int(value)


def _usable() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str = "symbolic analysis") -> Iterator[None]:
    """Abort the block with :class:`AnalysisTimeout` after ``seconds`` (main thread on POSIX
    only; elsewhere, or with ``seconds=None``, no limit applies). An alarm already pending (a
    user's own limit, or an enclosing ``time_limit``) is honoured: it fires at its own time with
    its own handler, and is re-armed with its remaining time when the block ends.

    Example:
        >>> with time_limit(5):
        ...     x = sum(range(10))
        >>> with time_limit(10, "outer"):
        ...     with time_limit(0.05, "inner"):
        ...         while True: pass
        Traceback (most recent call last):
        ...
        ctopt.limits.AnalysisTimeout: inner did not finish within 0.05 s (timeout)
    """
    seconds = check_timeout(seconds, f"time limit of {what}")
    if seconds is None or not _usable():
        yield
        return
    start = time.monotonic()
    outer_left, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    outer = {"deadline": start + outer_left if outer_left > 0 else math.inf,
             "interval": outer_interval}
    own_deadline = start + seconds
    previous = signal.getsignal(signal.SIGALRM)
    if previous is None:  # installed outside Python: cannot be restored, so left alone
        yield
        return

    def _arm() -> None:
        now = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL,
                         max(min(own_deadline, outer["deadline"]) - now, 1e-6))

    token = object()  # this limit's own expiry, told apart from an enclosing one's

    def _expired(signum, frame):
        if own_deadline < outer["deadline"] or time.monotonic() >= own_deadline:
            # again every 50 ms until the block is left: library code that catches even a
            # BaseException (a bare ``except:``) cannot run on unbounded
            signal.setitimer(signal.ITIMER_REAL, _REPEAT, _REPEAT)
            raise _Expired(token)
        # the enclosing deadline came first: it is the enclosing limit's to act on
        interval = outer["interval"]
        outer["deadline"] = time.monotonic() + interval if interval > 0 else math.inf
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        try:
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGALRM)
        finally:  # the enclosing handler let the block go on, or its exception was lost:
            left, interval = signal.getitimer(signal.ITIMER_REAL)
            if left > 0:  # the enclosing handler armed its next alarm (an enclosing limit does)
                outer["deadline"], outer["interval"] = time.monotonic() + left, interval
            signal.signal(signal.SIGALRM, _expired)  # this limit still holds
            _arm()

    signal.signal(signal.SIGALRM, _expired)
    _arm()
    try:
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer["deadline"] < math.inf:  # re-arm the enclosing alarm with its time left
                left = max(outer["deadline"] - time.monotonic(), 1e-6)
                signal.setitimer(signal.ITIMER_REAL, left, outer["interval"])
    except _Expired as exc:  # outside the disarming: a repeat alarm cannot slip past it
        if exc.args[0] is not token:
            raise  # an enclosing limit's: it converts it as its own block ends
        raise AnalysisTimeout(f"{what} did not finish within {seconds:g} s (timeout)") from None


class _Expired(BaseException):
    """A limit ran out, raised inside its block. A ``BaseException`` (as ``KeyboardInterrupt``
    is), so that library code's ``except Exception`` clauses (sympy has many) let it through;
    the block's :func:`time_limit` turns it into :class:`AnalysisTimeout` as the block ends."""


#: how often an expired limit raises again while its block has not been left (seconds)
_REPEAT = 0.05


def timed(what: str, default: float | None = None) -> Callable[[Callable], Callable]:
    """Give an analysis entry point a keyword ``timeout=`` (seconds, default ``default``; ``None``
    for no limit of its own) that runs it under :func:`time_limit`.

    Example:
        >>> @timed("counting")
        ... def count(n):
        ...     total = 0
        ...     for i in range(n):
        ...         total += i
        ...     return total
        >>> count(10, timeout=5)
        45
        >>> count(10**12, timeout=0.05)
        Traceback (most recent call last):
        ...
        ctopt.limits.AnalysisTimeout: counting did not finish within 0.05 s (timeout)
    """
    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def call(*args, timeout: float | None = default, **kwargs):
            seconds = check_timeout(timeout)
            if seconds is None:
                return func(*args, **kwargs)
            with time_limit(seconds, what):
                return func(*args, **kwargs)

        sig = inspect.signature(func)
        params = list(sig.parameters.values())
        at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
        params.insert(at, inspect.Parameter("timeout", inspect.Parameter.KEYWORD_ONLY,
                                            default=default, annotation="float | None"))
        call.__signature__ = sig.replace(parameters=params)
        return call

    return decorate
