"""Capturable steps (``capturable=True``): the step counters and the per-step numbers live on
the parameters' device, so the usual step reads nothing back to the host and copies nothing to
the device — it can be captured in a CUDA graph and replayed. Torch only — copied into
standalone exports.

The per-step numbers are the design's own scalar part (``_scalars``), run on 0-d float64
tensors: ``k = step + 1`` is read on the device, the hyperparameters are device copies made when
they change (floats, read on the host as ever); a choice is ``torch.where``. Designs whose
scalar part takes group reductions or a logical operation are refused: those would read back.

What is captured is the steady step of the compiled path: the group's parameters, all with a
gradient, in its intact flat layout (see :mod:`.layout`); run a few steps before capturing, as
for torch's ``capturable`` optimizers. A graph replays the hyperparameters it was captured with.

Example:
    >>> import torch, ctopt
    >>> Adam = ctopt.to_torch(ctopt.zoo.get("adam"))
    >>> hyper = DeviceHyper()
    >>> coef = hyper.coefficients(Adam, {"lr": 0.1, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
    ...                                  "weight_decay": 0.0}, 1.0, torch.zeros(3), torch.float32)
    >>> round(float(coef[-1]), 6)  # -lr / (1 - beta1**1) at k = 1
    -1.0
"""

from __future__ import annotations

import torch

from .errors import HyperparameterError, UnsupportedError

__all__ = ["DeviceHyper", "check_capturable"]


def check_capturable(cls, capturable, backend: str) -> None:
    """Refuse ``capturable`` values and designs the capturable step cannot run (named errors).

    Example:
        >>> import torch, ctopt
        >>> check_capturable(ctopt.to_torch(ctopt.zoo.get("adam")), True, "auto") is None
        True
    """
    if not isinstance(capturable, bool):
        raise HyperparameterError(f"capturable={capturable!r} must be True or False")
    if not capturable:
        return
    if backend in ("forloop", "foreach"):
        raise UnsupportedError(f"capturable=True runs on the compiled path; backend={backend!r} "
                               "is eager (use 'compiled' or 'auto')")
    if not cls.scalars_on_device:
        why = "takes group reductions" if cls.reduction_names else "uses a logical operation"
        raise UnsupportedError(f"capturable=True: the per-step scalar part of {cls.__name__} "
                               f"{why}, which would read values back to the host")


class DeviceHyper:
    """The per-step coefficients of capturable steps, computed on the device (one instance per
    layout): device copies of the hyperparameters, remade only when a value changes."""

    def __init__(self):
        self.key = None
        self.hyper: dict = {}

    def coefficients(self, cls, values: dict, gsign: float, steps: torch.Tensor,
                     dtype: torch.dtype) -> torch.Tensor:
        """The kernel's ``coef`` for ``k = steps[0] + 1``, on ``steps``' device, in the kernel's
        coefficient dtype (float32 for low-precision tensors, see ``_coef_tensor``)."""
        device = steps.device
        key = (device, tuple(values.items()))
        if key != self.key:  # a host-to-device copy, only when a value changed
            names = list(values)
            host = torch.tensor([float(values[n]) for n in names], dtype=torch.float64)
            stacked = host.to(device)
            self.hyper = dict(zip(names, stacked.unbind(), strict=True))
            self.key = key
        k = steps[0].to(torch.float64) + 1
        out = cls._scalars(self.hyper, k, gsign, None)
        cdtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        parts = [c.to(torch.float64) if isinstance(c, torch.Tensor) else
                 torch.full((), float(c), dtype=torch.float64, device=device) for c in out]
        if not parts:
            return torch.empty(0, dtype=cdtype, device=device)
        return torch.stack(parts).to(cdtype)
