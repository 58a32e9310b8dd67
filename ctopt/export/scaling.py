"""Gradient scaling inside the step, as torch's fused Adam does it: when ``torch.amp.GradScaler``
drives the optimizer it sets ``optimizer.grad_scale`` (the scale the gradients carry) and
``optimizer.found_inf`` (non-zero when a gradient overflowed) before ``step``. The compiled path
divides the gradients by the scale inside its kernel (writing the unscaled gradients back, as
torch does) and, where ``found_inf`` is set, leaves parameters and states untouched — all on the
device, with no host sync; on CUDA the step counters are corrected at the next step (the value
of ``found_inf`` is read then, from a copy made without blocking). The eager paths (and designs with
group reductions, or ``nonfinite`` checks, which need unscaled gradients first) read
``found_inf`` on the host and unscale in place. Torch only — copied into standalone exports.

Example:
    >>> import torch, ctopt
    >>> Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> opt = Adam([p], lr=0.1, backend="foreach")
    >>> p.grad = torch.full((2,), 8.0)
    >>> opt.grad_scale, opt.found_inf = torch.tensor(8.0), torch.tensor(1.0)
    >>> _ = opt.step()  # an overflow: nothing moves
    >>> p.tolist(), len(opt.state)
    ([1.0, 1.0], 0)
"""

from __future__ import annotations

import inspect
import types

import torch

from .errors import UnsupportedError

__all__ = ["GradScaling", "scaled_update"]


class GradScaling:
    """Mixin of :class:`GeneratedOptimizer`: ``grad_scale``/``found_inf`` (GradScaler's)."""

    #: GradScaler hands ``grad_scale`` and ``found_inf`` to the optimizer instead of skipping
    #: the step itself (which would need a host sync)
    _step_supports_amp_scaling = True

    def _scaling_inputs(self):
        """``(grad_scale, found_inf)`` as one-element tensors, or None when neither is set."""
        scale = getattr(self, "grad_scale", None)
        found = getattr(self, "found_inf", None)
        if scale is None and found is None:
            return None
        for name, value in (("grad_scale", scale), ("found_inf", found)):
            if value is not None and (not isinstance(value, torch.Tensor) or value.numel() != 1
                                      or not value.dtype.is_floating_point):
                raise UnsupportedError(f"optimizer.{name} = {value!r} must be a one-element "
                                       "floating-point tensor (as GradScaler sets it)")
        device = (scale if scale is not None else found).device
        if scale is None:
            scale = torch.ones((), device=device)
        if found is None:
            found = torch.zeros((), device=device)
        return scale.reshape(()), found.reshape(())

    def _unscale_on_host(self, plans, scale, found) -> bool:
        """The eager way: True (skip the step) when ``found_inf`` is set, else divide every
        gradient by ``scale`` in place."""
        if float(found) != 0:
            return True
        by_device: dict = {}
        for _, _, items in plans:
            for it in items:
                by_device.setdefault((it.grad.device, it.grad.dtype), []).append(it.grad)
        for (device, _), grads in by_device.items():
            torch._foreach_div_(grads, scale.to(device, non_blocking=True))
        return False

    def _defer_skip(self, found, steps) -> None:
        """Remember ``found_inf`` of a step taken in the kernel: the step counters ``steps``
        are moved back at the next step when it was set."""
        if found.device.type != "cuda":  # a host tensor: reading it costs nothing
            if float(found) != 0 and steps:
                torch._foreach_sub_(steps, 1.0)
                self._forget_steps()
            return
        host = torch.empty((), dtype=found.dtype, pin_memory=True)
        host.copy_(found, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending_skips.append((host, event, steps))

    def _settle_skips(self) -> None:
        """Apply the deferred ``found_inf`` of earlier steps to their step counters."""
        pending = getattr(self, "_pending_skips", None)
        if not pending:
            self._pending_skips = []
            return
        for host, event, steps in pending:
            if event is not None:
                event.synchronize()  # that step's copy finished long ago; later work runs on
            if float(host) != 0 and steps:
                torch._foreach_sub_(steps, 1.0)
                self._forget_steps()
        pending.clear()

    def _forget_steps(self) -> None:
        if self._runner is not None:
            self._runner.forget_steps()


def scaled_update(cls):
    """``update(theta, g, *states, coef, grad_scale, found_inf)``: the design's elementwise step
    on ``g / grad_scale``, computed in float32 (float64 for float64 tensors) and written back in
    the tensors' own dtypes, leaving everything as it was where ``found_inf`` is non-zero; the
    unscaled gradient is written back to ``g`` (as torch's fused optimizers do).

    Example:
        >>> import torch, ctopt
        >>> Sgd = ctopt.to_torch(ctopt.zoo.get("sgd"))
        >>> theta, g = torch.ones(2), torch.full((2,), 4.0)
        >>> coef = torch.tensor([float(c) for c in Sgd._scalars(
        ...     {"lr": 0.5, "weight_decay": 0.0}, 1, 1.0, None)])
        >>> scaled_update(Sgd)(theta, g, coef, torch.tensor(2.0), torch.tensor(0.0))
        >>> theta.tolist(), g.tolist()
        ([0.0, 0.0], [2.0, 2.0])
    """
    count = len(inspect.signature(cls._elementwise).parameters) - 2 - len(cls.state_keys)
    elementwise = cls._elementwise

    def update(theta, g, *rest):
        states, coef, scale, found = rest[:-3], rest[-3], rest[-2], rest[-1]
        op = torch.float64 if theta.dtype == torch.float64 else torch.float32
        grad = g.to(op) / scale.to(op)
        out = elementwise(theta.to(op), grad, *[s.to(op) for s in states],
                          *[coef[i].to(op) for i in range(count)])
        skip = found != 0
        theta.copy_(torch.where(skip, theta.to(op), out[0]))
        for state, new in zip(states, out[1:], strict=True):
            state.copy_(torch.where(skip, state.to(op), new))
        g.copy_(torch.where(skip, g.to(op), grad))

    # run with the generated code's globals, so that the compiler traces one namespace
    return types.FunctionType(update.__code__, elementwise.__globals__, "scaled_update", None,
                              update.__closure__)
