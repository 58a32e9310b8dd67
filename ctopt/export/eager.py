"""The flat layout's kernel without a compiler. Torch only — copied into standalone exports.

The compiled path keeps a param group's parameters, gradients and states in flat buffers (see
:mod:`.layout`) and updates them with one call of a fused kernel. Before that kernel is worth
compiling (``backend="auto"`` on a small model, for its first
``AUTO_COMPILE_AFTER_STEPS`` steps) the same layout is updated by :class:`Eager`: the design's
own for-loop code (in-place methods on one tensor) on the flat buffers. Each of its passes is
then one torch call over the whole group instead of one per tensor, which is most of a small
model's step. (The foreach code on one-element lists computes the same and takes 3-17 % longer
on 6k-300k elements, in torch's list handling: measured on Adam, sgd, Adan and dgclip.)

Example:
    >>> import torch, ctopt
    >>> Sgd = ctopt.to_torch(ctopt.zoo.get("sgd"))
    >>> theta, g = torch.ones(3), torch.full((3,), 2.0)
    >>> coef = Sgd._scalars({"lr": 0.5, "weight_decay": 0.0}, 1, 1.0, None)
    >>> Eager(Sgd._forloop)(theta, g, coef)
    >>> theta.tolist()
    [0.0, 0.0, 0.0]
"""

from __future__ import annotations

__all__ = ["Eager"]


class Eager:
    """``forloop`` (a design's ``_forloop``) called as its ``_fused`` kernel is, ``(theta, g,
    *states, coef)``, with flat tensors; ``coef`` is the step's coefficients as the design's
    ``_scalars`` returns them (Python numbers and truth values, which its for-loop code
    branches on), not the compiled kernel's coefficient tensor."""

    def __init__(self, forloop):
        self.forloop = forloop

    def __call__(self, theta, g, *rest) -> None:
        *states, coef = rest
        self.forloop(theta, g, *states, *coef)
