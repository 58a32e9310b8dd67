"""fp32 master weights for low-precision parameters (``master_weights=True``, as apex's
FusedAdam and mixed-precision training recipes keep them). Torch only — copied into standalone
exports.

With master weights, every bfloat16 or float16 parameter gets a float32 copy kept in its state
under :data:`MASTER_KEY`, and its states are float32 too. The step is computed on the float32
copy (the gradient cast up), then the parameter is written as the copy rounded to its dtype.
float32, float64 and complex parameters are unaffected (no copy; states in their dtype).

Example:
    >>> import torch, ctopt
    >>> Sgd = ctopt.to_torch(ctopt.zoo.get("sgd"))
    >>> p = torch.nn.Parameter(torch.ones(2, dtype=torch.bfloat16))
    >>> opt = Sgd([p], lr=1e-3, master_weights=True)
    >>> p.grad = torch.ones_like(p)
    >>> _ = opt.step()
    >>> opt.state[p][MASTER_KEY].tolist(), p.tolist()  # 1 - 1e-3 is below bf16's resolution
    ([0.9990000128746033, 0.9990000128746033], [1.0, 1.0])
"""

from __future__ import annotations

import inspect
import types

import torch

__all__ = ["LOW_PRECISION", "MASTER_KEY", "MasterWeights", "master_update", "unscale_grad"]

#: the state-dict key of a parameter's float32 master copy (no design state may take it)
MASTER_KEY = "master_param"
#: the parameter dtypes that get a master copy
LOW_PRECISION = (torch.bfloat16, torch.float16)


class MasterWeights:
    """Mixin of :class:`GeneratedOptimizer`: which parameters keep a master copy, and the eager
    paths' step on it."""

    master_weights = False

    def _keeps_master(self, p: torch.Tensor) -> bool:
        """Whether ``p`` is stepped on a float32 master copy."""
        return self.master_weights and p.dtype in LOW_PRECISION

    def _state_dtype(self, p: torch.Tensor) -> torch.dtype:
        """The dtype of ``p``'s states (float32 with a master copy, else ``p``'s own)."""
        return torch.float32 if self._keeps_master(p) else p.dtype

    def _repair_master(self, p: torch.Tensor, state: dict, fresh: dict) -> None:
        """A parameter whose dtype changed since its state was made (``model.to()``): into
        ``fresh``, a master copy made from it and its states cast to float32 when it keeps one
        now, or None for a master copy it no longer keeps."""
        if self._keeps_master(p) and MASTER_KEY not in state:
            fresh[p] = {key: state[key].to(torch.float32) for key in self.state_keys}
            fresh[p][MASTER_KEY] = p.detach().to(torch.float32, copy=True,
                                                 memory_format=torch.preserve_format)
        elif MASTER_KEY in state and not self._keeps_master(p):
            fresh[p] = {MASTER_KEY: None}

    def _on_masters(self, items, states):
        """``items`` with theta replaced by the master copy and the gradient cast to float32
        where a master copy is kept, and the ``(parameter, master)`` pairs to write back."""
        out, pairs = [], []
        for it, state in zip(items, states, strict=True):
            master = state.get(MASTER_KEY)
            if master is None or not self._keeps_master(it.p):
                out.append(it)
                continue
            out.append(it._replace(theta=master, grad=it.grad.to(torch.float32)))
            pairs.append((it.theta, master))
        return out, pairs

    @staticmethod
    def _write_back(pairs) -> None:
        """Each parameter := its master copy rounded to the parameter's dtype."""
        if pairs:
            torch._foreach_copy_([p for p, _ in pairs], [m for _, m in pairs])


def master_update(cls, scaled: bool, found_on_host: bool = False):
    """``update(theta, g, master, *states, coef[, grad_scale, found_inf])``: the design's step
    computed on the float32 ``master`` with ``g`` cast up (divided by ``grad_scale`` when
    ``scaled``), written to ``master`` and the states, and ``theta`` := the new master rounded to
    its dtype; where ``found_inf`` is non-zero nothing changes (the unscaled gradient is written
    back to ``g`` otherwise, as torch's fused optimizers do). With ``found_on_host`` the scaled
    update takes no ``found_inf`` (the caller has read it as zero on the host), chooses nothing
    per element and leaves the gradient's write-back to :func:`unscale_grad`, after it.

    Example:
        >>> import torch, ctopt
        >>> Sgd = ctopt.to_torch(ctopt.zoo.get("sgd"))
        >>> theta, g = torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.bfloat16)
        >>> master = theta.float()
        >>> coef = torch.tensor([float(c) for c in Sgd._scalars(
        ...     {"lr": 1e-3, "weight_decay": 0.0}, 1, 1.0, None)])
        >>> master_update(Sgd, False)(theta, g, master, coef)
        >>> master.tolist(), theta.tolist()
        ([0.9990000128746033, 0.9990000128746033], [1.0, 1.0])
    """
    count = len(inspect.signature(cls._elementwise).parameters) - 2 - len(cls.state_keys)
    elementwise = cls._elementwise

    def update(theta, g, master, *rest):
        states, coef = rest[:len(rest) - 1], rest[-1]
        op = master.dtype
        out = elementwise(master, g.to(op), *states, *[coef[i].to(op) for i in range(count)])
        theta.copy_(out[0])
        master.copy_(out[0])
        for state, new in zip(states, out[1:], strict=True):
            state.copy_(new)

    def scaled_update(theta, g, master, *rest):
        states, coef, scale, found = rest[:-3], rest[-3], rest[-2], rest[-1]
        op = master.dtype
        grad = g.to(op) / scale.to(op)
        out = elementwise(master, grad, *states, *[coef[i].to(op) for i in range(count)])
        skip = found != 0
        theta.copy_(torch.where(skip, theta.to(op), out[0]))
        master.copy_(torch.where(skip, master, out[0]))
        for state, new in zip(states, out[1:], strict=True):
            state.copy_(torch.where(skip, state, new))
        g.copy_(torch.where(skip, g.to(op), grad))

    def host_found_update(theta, g, master, *rest):
        states, coef, scale = rest[:-2], rest[-2], rest[-1]
        op = master.dtype
        grad = g.to(op) / scale.to(op)
        out = elementwise(master, grad, *states, *[coef[i].to(op) for i in range(count)])
        theta.copy_(out[0])
        master.copy_(out[0])
        for state, new in zip(states, out[1:], strict=True):
            state.copy_(new)

    fn = (host_found_update if found_on_host else scaled_update) if scaled else update
    # run with the generated code's globals, so that the compiler traces one namespace
    return types.FunctionType(fn.__code__, elementwise.__globals__, "master_update", None,
                              fn.__closure__)


def unscale_grad(g, scale, found) -> None:
    """``g`` := ``g / scale`` computed in float32 (float64 for float64), where ``found`` is zero:
    the gradient write-back of a scaled :func:`master_update` made with ``found_on_host``.

    On a CPU core the fused scaled master-weight kernel, with this store as its fifth output
    stream, took 2.4 times as long as without it (17.5 vs 7.1 ms on 10M bfloat16 elements); as a
    kernel of its own the store costs one more pass over ``g`` (1.0 ms).

    Example:
        >>> import torch
        >>> g = torch.full((2,), 6.0, dtype=torch.bfloat16)
        >>> unscale_grad(g, torch.tensor(4.0), torch.tensor(0.0)); g.tolist()
        [1.5, 1.5]
        >>> unscale_grad(g, torch.tensor(4.0), torch.tensor(1.0)); g.tolist()
        [1.5, 1.5]
    """
    op = torch.float64 if g.dtype == torch.float64 else torch.float32
    g.copy_(torch.where(found != 0, g.to(op), g.to(op) / scale.to(op)))
