"""Per-call ``timeout=`` on the analysis entry points, and limits that nest inside a user's own.

Every test bounds itself: a broken limit fails with the guard's message instead of hanging.
"""

from __future__ import annotations

import inspect
import signal
import time

import pytest
import sympy as sp

import ctopt
from ctopt.errors import HyperparameterError, UnsupportedError
from ctopt.limits import AnalysisTimeout, time_limit

ENTRY_POINTS = ("transfer_function", "transfer_functions", "state_space", "closed_loop",
                "stability_conditions", "lyapunov", "filter_validity", "worst_case_rate", "tune",
                "iqc_rate", "check_lyapunov")


class UserAlarm(BaseException):
    """What a user's own SIGALRM handler raises: a ``BaseException``, as ``KeyboardInterrupt``
    is, so that library code's broad ``except Exception`` clauses (sympy has many) cannot
    swallow it — what is tested is that ctopt's limits let the user's alarm through. (A user's
    ``Exception`` can be swallowed by such a clause for as long as the library keeps catching;
    ctopt's own ``AnalysisTimeout`` raises again every 50 ms for that reason.)"""


@pytest.fixture
def user_alarm():
    """A user's own alarm: ``arm(seconds)`` sets it; it raises :class:`UserAlarm`."""
    def handler(signum, frame):
        raise UserAlarm

    before = signal.signal(signal.SIGALRM, handler)
    yield lambda seconds: signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, before)


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def slow_matrix() -> sp.Matrix:
    """A 3x3 symbolic Lyapunov problem that takes seconds, far more than the limits below."""
    return sp.Matrix(3, 3, lambda i, j: sp.Symbol(f"a{i}{j}", real=True))


def _entry(name):
    module = ctopt.analysis if hasattr(ctopt.analysis, name) else None
    if name == "transfer_functions":
        from ctopt.analysis.transfer import transfer_functions
        return transfer_functions
    return getattr(module, name)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_entry_point_takes_a_timeout_and_checks_it(name):
    func = _entry(name)
    param = inspect.signature(func).parameters["timeout"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is None
    for bad in (0, -1.0, float("nan"), float("inf"), 1e400, "5", True, 10**6):
        with pytest.raises(HyperparameterError, match=r"timeout"):
            func(None, timeout=bad)


def test_an_entry_point_honours_its_timeout():
    start = time.monotonic()
    with time_limit(30, "the guard of this test"), \
            pytest.raises(AnalysisTimeout, match=r"Lyapunov certificate did not finish within 0.2 s"):
        ctopt.lyapunov(slow_matrix(), timeout=0.2)
    assert time.monotonic() - start < 5
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_results_within_the_timeout_are_unchanged():
    design = ctopt.zoo.get("heavy_ball")
    loop = ctopt.closed_loop(design, timeout=30)
    assert ctopt.stability_conditions(loop, timeout=30).expr == ctopt.stability_conditions(loop).expr
    assert issubclass(AnalysisTimeout, UnsupportedError)


def test_a_users_earlier_alarm_fires_inside_an_analysis(user_alarm):
    """The user's limit (0.3 s) comes before the analysis' own (60 s): the user's handler runs.
    The alarm repeats every 0.1 s (an ``Exception`` there once hung this test, and once took
    the analysis' full 60 s, swallowed by sympy each time; see :class:`UserAlarm`)."""
    user_alarm(0.3)
    signal.setitimer(signal.ITIMER_REAL, 0.3, 0.1)
    start = time.monotonic()
    with pytest.raises(UserAlarm):
        ctopt.lyapunov(slow_matrix(), timeout=60)
    assert time.monotonic() - start < 5


def test_a_users_alarm_survives_a_shorter_inner_limit(user_alarm):
    """An inner limit that ends (by finishing or by expiring) re-arms the user's alarm with its
    remaining time and handler."""
    user_alarm(1.0)
    with time_limit(0.1, "inner"):
        spin(0.02)
    left, _ = signal.getitimer(signal.ITIMER_REAL)
    assert 0.85 < left < 1.0
    with pytest.raises(AnalysisTimeout, match="inner"), time_limit(0.1, "inner"):
        spin(5)
    left, _ = signal.getitimer(signal.ITIMER_REAL)
    assert 0.7 < left < 0.9
    start = time.monotonic()
    with pytest.raises(UserAlarm):
        spin(5)
    assert time.monotonic() - start < 1.2


def test_a_users_alarm_that_expires_during_an_inner_limit_fires_there(user_alarm):
    user_alarm(0.2)
    start = time.monotonic()
    with pytest.raises(UserAlarm), time_limit(10, "inner"):
        spin(5)
    assert time.monotonic() - start < 1
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # fired once, not re-armed


def test_nested_time_limits_take_the_earlier_deadline():
    with pytest.raises(AnalysisTimeout, match="outer did not finish within 0.2 s"), \
            time_limit(0.2, "outer"), time_limit(10, "inner"):
        spin(5)
    with pytest.raises(AnalysisTimeout, match="inner did not finish within 0.1 s"), \
            time_limit(10, "outer"), time_limit(0.1, "inner"):
        spin(5)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_an_ignored_user_alarm_lets_the_inner_limit_go_on():
    before = signal.signal(signal.SIGALRM, signal.SIG_IGN)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(AnalysisTimeout, match="inner"), time_limit(0.3, "inner"):
            spin(3)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def test_a_timeout_that_library_code_catches_fires_again():
    """Library code's broad ``except Exception`` (as in sympy's fallbacks) does not catch an
    expired limit at all; a bare ``except:`` may swallow it once, and the limit raises again
    50 ms later, so the block still ends. Either way the caller gets AnalysisTimeout."""
    caught = swallowed = 0
    start = time.monotonic()
    with pytest.raises(AnalysisTimeout), time_limit(0.1, "a catching block"):
        try:
            spin(5)
        except Exception:  # noqa: BLE001
            caught += 1
    assert caught == 0 and time.monotonic() - start < 1
    start = time.monotonic()
    with pytest.raises(AnalysisTimeout), time_limit(0.1, "a swallowing block"):
        try:
            spin(5)
        except BaseException:  # noqa: BLE001  (a bare except)
            swallowed += 1
        spin(5)
    assert swallowed == 1 and time.monotonic() - start < 2
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_library_code_that_catches_in_a_loop_cannot_outlast_the_limit():
    """What once held an entry point's 0.2 s limit for 30 s in CI: code that catches
    ``Exception`` around every unit of its work (as sympy's loops of fallbacks do) swallowed
    each repeat of the timeout. The expiry is a ``BaseException`` inside the block now."""
    start = time.monotonic()
    with time_limit(30, "the guard of this test"), \
            pytest.raises(AnalysisTimeout, match="a looping block did not finish within 0.2 s"), \
            time_limit(0.2, "a looping block"):
        while time.monotonic() - start < 10:
            try:
                spin(0.01)
            except Exception:  # noqa: BLE001, SIM105  (as a library's fallback does)
                continue
    assert time.monotonic() - start < 2
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_repeating_user_alarm_whose_first_firing_is_lost_fires_again_through_nested_limits():
    """What once held an analysis for its full 60 s in CI: the user's repeating alarm fired
    inside two nested limits (an entry point calling another), and its first exception was lost
    (raised inside a garbage-collector callback, where Python only reports it). The inner limit
    then re-armed the timer for its own deadline, over the outer limit's re-arming for the
    user's next firing. Here the first firing is lost by the handler returning."""
    calls = []

    def handler(signum, frame):
        calls.append(time.monotonic())
        if len(calls) > 1:
            raise UserAlarm

    before = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2, 0.1)
        start = time.monotonic()
        with pytest.raises(UserAlarm), time_limit(8, "outer"), time_limit(8, "inner"):
            spin(10)
        assert time.monotonic() - start < 2 and len(calls) == 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
