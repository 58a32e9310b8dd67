"""Bounded symbolic work: analyses of too-large designs fail fast with a clear error.

Each check runs under a guard ``time_limit``: an analysis that hangs instead of refusing fails the
test with the guard's message rather than hanging the test run.
"""

from __future__ import annotations

import importlib
import signal
import threading

import pytest
import sympy as sp

import ctopt
from ctopt.design import POSITIVE, UNIT, DesignBuilder, g, theta
from ctopt.errors import UnsupportedError
from ctopt.filters import z
from ctopt.limits import MAX_DEGREE, MAX_STATES, check_size, time_limit

GUARD_S = 30  # far above the sub-second refusal, far below a hang
TOO_MANY = MAX_STATES + 4


def ema_chain(n: int) -> ctopt.Design:
    """n EMAs in series: a design with n states and a degree-n characteristic polynomial."""
    b = DesignBuilder(f"chain{n}", doc="EMAs in series")
    lr = b.hyper("lr", 0.1, POSITIVE, role="lr")
    beta = b.hyper("beta", 0.9, UNIT, role="ema")
    signal_in = g
    for i in range(n):
        state = b.state(f"m{i}")
        b.assign(state, beta * state + (1 - beta) * signal_in)
        signal_in = state
    b.update(theta - lr * signal_in)
    return b.build()


def high_order_filter(n: int) -> ctopt.Design:
    """A single moment declared as an n-th order filter in z (n states)."""
    b = DesignBuilder(f"filter{n}")
    lr = b.hyper("lr", 0.1, POSITIVE, role="lr")
    beta = b.hyper("beta", 0.9, UNIT, role="ema")
    b.filter("m", ((1 - beta) * z / (z - beta)) ** n, input=g)
    b.update(theta - lr * sp.Symbol("m", real=True))
    return b.build()


def analysis(name: str):
    """The public analysis ``name``, or skip when that analysis is not written yet."""
    module = importlib.import_module("ctopt.analysis")
    try:
        return getattr(module, name)
    except (AttributeError, ImportError) as exc:
        pytest.skip(f"ctopt.{name} is not available yet ({exc})")


def refuses_fast(call) -> UnsupportedError:
    with time_limit(GUARD_S, "the guard of this test"), pytest.raises(UnsupportedError) as info:
        call()
    assert "the guard of this test" not in str(info.value), "the analysis hung instead of refusing"
    return info.value


# --------------------------------------------------------------- the limits themselves
def test_check_size_names_the_task_and_the_limit():
    check_size("task", states=MAX_STATES, degree=MAX_DEGREE)
    with pytest.raises(UnsupportedError, match=rf"task: {MAX_STATES + 1} states exceed the "
                                               rf"symbolic limit {MAX_STATES}"):
        check_size("task", states=MAX_STATES + 1)
    with pytest.raises(UnsupportedError, match=r"numeric path"):
        check_size("task", degree=MAX_DEGREE + 1)


def test_time_limit_aborts_a_long_computation_and_restores_the_handler():
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(UnsupportedError, match=r"spin did not finish within 0.2 s"), \
            time_limit(0.2, "spin"):
        while True:
            pass
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_time_limit_none_and_other_threads_impose_nothing():
    with time_limit(None):
        assert sum(range(1000)) == 499500
    seen = []

    def work():
        with time_limit(0.01):
            seen.append(sum(range(10**6)))

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert seen == [sum(range(10**6))]


# --------------------------------------------------------------- analyses refuse big designs
@pytest.mark.parametrize("build", [ema_chain, high_order_filter])
def test_transfer_function_refuses_too_many_states(build):
    design = build(TOO_MANY)
    error = refuses_fast(lambda: analysis("transfer_function")(
        design, output=design.state_names[-1], input="g"))
    assert f"{TOO_MANY} states" in str(error)


def test_state_space_refuses_too_many_states():
    refuses_fast(lambda: analysis("state_space")(ema_chain(TOO_MANY)))


@pytest.mark.parametrize("build", [ema_chain, high_order_filter])
def test_closed_loop_refuses_too_many_states(build):
    error = refuses_fast(lambda: analysis("closed_loop")(build(TOO_MANY)))
    assert "closed loop" in str(error)


def test_stability_conditions_refuses_a_high_degree_polynomial():
    coefficients = sp.symbols(f"c0:{TOO_MANY}", real=True)
    poly = z**TOO_MANY + sum(c * z**i for i, c in enumerate(coefficients))
    error = refuses_fast(lambda: analysis("stability_conditions")(poly))
    assert f"degree {TOO_MANY}" in str(error)


def test_stability_conditions_refuses_a_large_symbolic_matrix():
    matrix = symbolic_matrix(TOO_MANY)
    with time_limit(3, "the guard of this test"), pytest.raises(UnsupportedError) as info:
        analysis("stability_conditions")(matrix)
    assert "exceed" in str(info.value), str(info.value)


def symbolic_matrix(n: int) -> sp.Matrix:
    return sp.Matrix(n, n, lambda i, j: sp.Symbol(f"a{i}_{j}", real=True))


def test_lyapunov_refuses_too_many_states():
    error = refuses_fast(lambda: analysis("lyapunov")(symbolic_matrix(TOO_MANY)))
    assert f"{TOO_MANY} states" in str(error)


def test_small_designs_are_still_analysed():
    """The limits refuse only what is too large: a design at the limit is analysed."""
    design = ema_chain(2)
    tf = analysis("transfer_function")(design, output="m1", input="g")
    assert sp.simplify(tf.expr - ((1 - sp.Symbol("beta", real=True)) * z
                                  / (z - sp.Symbol("beta", real=True))) ** 2) == 0
    analysis("closed_loop")(ema_chain(MAX_STATES - 1))
