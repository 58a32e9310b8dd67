"""Numeric responses of a linear filter: its frequency response, its impulse and step responses
(python-control, current-input indexing), and its poles and zeros.

These are the data that :mod:`ctopt.plot` draws for Bode, time-response and pole-zero plots.
``system`` is a TransferFunction, a ClosedLoop (from ``w`` to ``theta``; its eigenvalues for
poles) or a design with ``output=``/``input=``.

Example:
    >>> import ctopt
    >>> from ctopt.analysis.responses import time_response
    >>> time_response(ctopt.zoo.get("adam"), "step", output="v", n=2, beta2=0.5).y.tolist()
    [0.5, 0.75]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..design import Design
from ..errors import DesignError, OptionError

__all__ = ["FrequencyResponse", "PolesZeros", "TimeResponse", "as_transfer", "frequency_response",
           "poles_zeros", "time_response"]

#: The time responses :func:`time_response` computes.
TIME_RESPONSES = ("impulse", "step")


def as_transfer(system, output: str | None = None, input=None):
    """``system`` as a :class:`~ctopt.analysis.transfer.TransferFunction`.

    Example:
        >>> import ctopt
        >>> str(as_transfer(ctopt.zoo.get("adam"), output="v").input)
        'g**2'
    """
    from .loops import ClosedLoop
    from .transfer import TransferFunction, transfer_function

    if isinstance(system, TransferFunction):
        return system
    if isinstance(system, ClosedLoop):
        return system.transfer_function()
    if isinstance(system, Design):
        return transfer_function(system, output=output, input=input)
    raise DesignError(f"expected a design, a TransferFunction or a ClosedLoop, not {system!r}")


@dataclass(frozen=True)
class FrequencyResponse:
    """``response[i] = H(e^{j w[i]})`` of ``output`` from ``input``."""

    w: np.ndarray
    response: np.ndarray
    output: str
    input: str

    @property
    def magnitude_db(self) -> np.ndarray:
        """``20 log10 |H|``."""
        return 20 * np.log10(np.abs(self.response))

    @property
    def phase_deg(self) -> np.ndarray:
        """The unwrapped phase of ``H`` in degrees."""
        return np.degrees(np.unwrap(np.angle(self.response)))


def frequency_response(system, w=None, *, output: str | None = None, input=None,
                       **values: float) -> FrequencyResponse:
    """``H(e^{jw})`` over ``w`` (default 400 log-spaced points in ``[1e-3, pi]``).

    Example:
        >>> import ctopt
        >>> r = frequency_response(ctopt.zoo.get("adam"), [1e-6], output="v", beta2=0.9)
        >>> bool(abs(r.magnitude_db[0]) < 1e-9)   # unit DC gain
        True
    """
    tf = as_transfer(system, output, input)
    w = np.logspace(-3, np.log10(np.pi), 400) if w is None else np.asarray(w, dtype=float)
    return FrequencyResponse(w, np.asarray(tf.frequency_response(w, **values)), str(tf.output),
                             str(tf.input))


@dataclass(frozen=True)
class TimeResponse:
    """``y[i]``, the ``kind`` response of ``output`` at step ``k[i]`` (``k = 1..n``)."""

    kind: str
    k: np.ndarray
    y: np.ndarray
    output: str
    input: str


def time_response(system, kind: str = "step", *, output: str | None = None, input=None,
                  n: int = 30, **values: float) -> TimeResponse:
    """The response ``y[k]``, ``k = 1..n``, to a unit impulse (``kind="impulse"``) or a unit step
    (``"step"``) at ``k = 1`` from a zero initial state.

    Example:
        >>> import ctopt
        >>> time_response(ctopt.zoo.get("adam"), "impulse", output="v", n=3, beta2=0.5).y.tolist()
        [0.5, 0.25, 0.125]
    """
    if kind not in TIME_RESPONSES:
        raise OptionError(f"unknown time response {kind!r}; allowed: {', '.join(TIME_RESPONSES)}")
    import control

    tf = as_transfer(system, output, input)
    fn = control.impulse_response if kind == "impulse" else control.step_response
    y = np.asarray(fn(tf.to_control(**values), T=np.arange(n)).outputs, dtype=float).ravel()
    return TimeResponse(kind, np.arange(1, n + 1), y, str(tf.output), str(tf.input))


@dataclass(frozen=True)
class PolesZeros:
    """The poles and zeros of a transfer function (a closed loop's eigenvalues, no zeros)."""

    poles: np.ndarray
    zeros: np.ndarray


def poles_zeros(system, *, output: str | None = None, input=None, **values: float) -> PolesZeros:
    """Poles and zeros in the z-plane: a ClosedLoop's eigenvalues, or a transfer function's roots.

    Example:
        >>> import ctopt
        >>> pz = poles_zeros(ctopt.zoo.get("adam"), output="v", beta2=0.9)
        >>> pz.poles.tolist(), pz.zeros.tolist()
        ([0.9], [0.0])
    """
    from .loops import ClosedLoop

    if isinstance(system, ClosedLoop):
        return PolesZeros(np.asarray(system.eigenvalues(**values)), np.array([]))
    num, den = as_transfer(system, output, input).numeric(**values)
    return PolesZeros(np.roots(den), np.roots(num))
